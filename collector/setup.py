"""What `crm-audit-collector setup` and the running collector install, from one config.

One place builds the OpenSearch client (with the configured credentials) and the
`LifecycleInstaller` (templates, retention-class policies, the legal-hold policy, the
single indices), so ``setup`` installs exactly what ``run`` checks or installs.
"""

from __future__ import annotations

from collector.config import CollectorConfig
from collector.gate import integrity_indices
from collector.hold import HOLDS_MAPPING, holds_index
from collector.index import ClientAuth, OpenSearchHttp, Requester, make_client
from collector.lifecycle import LifecycleInstaller


def client_auth(config: CollectorConfig) -> ClientAuth:
    """The OpenSearch credentials of `config` (password read from its file)."""
    os_cfg = config.opensearch
    return ClientAuth(
        username=os_cfg.username,
        password=os_cfg.password(),
        ca=os_cfg.ca,
        client_cert=os_cfg.client_cert,
        client_key=os_cfg.client_key,
    )


def requester(config: CollectorConfig, *, pool_maxsize: int = 10) -> Requester:
    """A `Requester` for the configured cluster (every listed node), authenticated as
    configured."""
    os_cfg = config.opensearch
    return OpenSearchHttp(
        make_client(
            os_cfg.all_urls,
            timeout_s=os_cfg.request_timeout_s,
            pool_maxsize=pool_maxsize,
            auth=client_auth(config),
        )
    )


def installer(
    config: CollectorConfig, request: Requester, *, dry_run: bool = False
) -> LifecycleInstaller:
    """The installer for `config`: event/DLQ templates, class + hold policies, indices."""
    prefix = config.opensearch.index_prefix
    indices = dict(integrity_indices(prefix))
    indices[holds_index(prefix)] = HOLDS_MAPPING
    return LifecycleInstaller(
        request,
        prefix=prefix,
        policies={name: cls.policy_body() for name, cls in config.retention.classes.items()},
        indices=indices,
        replicas=config.opensearch.replicas,
        dry_run=dry_run,
    )
