#!/bin/sh
# Create the namespace and Refund Desk's search attributes (see DESIGN.md). Idempotent.
set -eu
ns="${TEMPORAL_NAMESPACE:-default}"
until temporal operator cluster health >/dev/null 2>&1; do sleep 2; done
temporal operator namespace describe --namespace "$ns" >/dev/null 2>&1 \
  || temporal operator namespace create --namespace "$ns" --retention 30d
for pair in RefundStatus:Keyword RefundReason:Keyword RefundCustomer:Keyword \
            RefundChargeId:Keyword RefundAmount:Int RefundCurrency:Keyword \
            RefundRisk:Keyword RefundSlaBreached:Bool RefundPolicyVersion:Keyword \
            RefundAssignee:Keyword RefundDeadline:Datetime RefundIncident:Keyword; do
  name="${pair%%:*}"; type="${pair##*:}"
  temporal operator search-attribute create --namespace "$ns" --name "$name" --type "$type" \
    >/dev/null 2>&1 || true
done
temporal operator search-attribute list --namespace "$ns" | grep -c Refund
echo "Namespace $ns and search attributes are ready."
