"""The dev server starts offline from the pinned package, with our search attributes."""

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from core import search_attributes


async def _custom_attributes(env) -> dict[str, int]:
    resp = await env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=env.client.namespace)
    )
    return dict(resp.custom_attributes)


async def test_dev_server_knows_our_search_attributes(dev_env):
    found = await _custom_attributes(dev_env)
    for name, kind in search_attributes.indexed_types().items():
        assert found.get(name) == kind, name
