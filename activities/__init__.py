"""Every side effect of a refund case: Stripe, SendGrid, policy loading."""
