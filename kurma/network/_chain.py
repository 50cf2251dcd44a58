"""ADD, DEL and CHECK through a network's plugin chain (the CNI 1.0 runtime's side).

- ADD runs the plugins in order, each one's result the next one's `prevResult`. If one
  fails, the plugins that ran (the failing one too) get DEL in reverse order before the
  error is raised, so no veth, IP allocation or iptables rule stays half-made.
- DEL runs every plugin in reverse order with the last ADD result as `prevResult`; a plugin's
  failure does not stop the others; the failures are raised together afterwards
  (DetachFailed). DEL of what is gone already succeeds, as the spec requires of plugins.
- CHECK runs the plugins in order with the last result, unless the network disables it.

Each plugin's stdin is its object from the conflist with the network's `name` and
`cniVersion`, `prevResult`, and `runtimeConfig` holding the capability arguments that
plugin declares (`portMappings` for portmap, `ips`, `mac`...), as libcni builds it.
With a store, the attachment is recorded before ADD starts and forgotten after DEL, so a
crash at any point leaves a record for the reconcile to DEL.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..errors import DetachFailed, NetworkError, PluginError, PluginNotFound
from ._attachment import (
    Attachment,
    PortMapping,
    check_container_id,
    check_ifname,
    format_cni_args,
)
from ._config import NetworkConfig, PluginConfig
from ._plugins import Plugins
from ._result import Result, ResultFormatError
from ._store import AttachmentStore

log = logging.getLogger(__name__)


def plugin_stdin(
    network: NetworkConfig,
    plugin: PluginConfig,
    prev_result: Mapping[str, Any] | None,
    runtime_config: Mapping[str, Any],
) -> bytes:
    """The configuration one plugin reads on stdin."""
    conf = dict(plugin.conf)
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    conf.pop("prevResult", None)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    wanted = {k: v for k, v in runtime_config.items() if k in plugin.capabilities}
    if wanted:
        conf["runtimeConfig"] = wanted
    return json.dumps(conf, separators=(",", ":")).encode()


def _call(
    plugins: Plugins,
    network: NetworkConfig,
    plugin: PluginConfig,
    command: str,
    att: Attachment,
    prev: Mapping[str, Any] | None,
    netns: str,
) -> Mapping[str, Any] | None:
    stdin = plugin_stdin(network, plugin, prev, att.runtime_config())
    return plugins.run(
        plugin.type,
        command,
        stdin,
        container_id=att.container_id,
        netns=netns,
        ifname=att.ifname,
        args=format_cni_args(att.args),
    )


def attach(
    network: NetworkConfig,
    container_id: str,
    netns_path: str,
    ifname: str,
    *,
    port_mappings: Sequence[PortMapping] = (),
    args: Sequence[tuple[str, str]] = (),
    capabilities: Mapping[str, Any] | None = None,
    plugins: Plugins | None = None,
    store: AttachmentStore | None = None,
) -> Attachment:
    """ADD the network namespace at `netns_path` to `network` as interface `ifname`.

    `capabilities` are further runtimeConfig arguments by capability name (`ips`, `mac`,
    `bandwidth`...); each plugin gets those it declares. Raises PluginError (after undoing
    the chain; `cleanup_errors` lists DELs that failed too, whose record then stays in the
    store), or ValueError for a bad container ID or interface name.
    """
    plugins = plugins or Plugins()
    att = Attachment(
        network=network.name,
        config=network.raw,
        container_id=check_container_id(container_id),
        netns=netns_path,
        ifname=check_ifname(ifname),
        port_mappings=tuple(port_mappings),
        args=tuple((str(k), str(v)) for k, v in args),
        capabilities=dict(capabilities or {}),
    )
    format_cni_args(att.args)  # reject bad arguments before anything is made
    if store is not None:
        store.save(att)
    started = time.monotonic()
    prev: Mapping[str, Any] | None = None
    ran: list[PluginConfig] = []
    for plugin in network.plugins:
        ran.append(plugin)
        try:
            out = _call(plugins, network, plugin, "ADD", att, prev, netns_path)
            if out is None:
                raise PluginError(plugin.type, None, "ADD printed no result")
            result = Result.from_json(out)
        except BaseException as e:
            error = e
            if isinstance(e, ResultFormatError):
                error = PluginError(plugin.type, None, str(e))
            if isinstance(e, PluginNotFound):
                ran.pop()  # never ran: nothing of it to undo
            _undo(plugins, network, att, ran, prev, error, store)
            if error is e:
                raise
            raise error from None
        prev = out
    att = replace(att, result=result)
    if store is not None:
        store.save(att)
    log.info(
        "attached %s to network %s as %s in %.3f s",
        container_id,
        network.name,
        ifname,
        time.monotonic() - started,
    )
    return att


def _undo(
    plugins: Plugins,
    network: NetworkConfig,
    att: Attachment,
    ran: list[PluginConfig],
    prev: Mapping[str, Any] | None,
    error: BaseException,
    store: AttachmentStore | None,
) -> None:
    """DEL the plugins that ran of a failed ADD, in reverse; forget the record if all went."""
    log.warning(
        "ADD of %s to network %s failed (%s); undoing %d plugin(s)",
        att.container_id,
        network.name,
        error,
        len(ran),
    )
    failed = _delete(plugins, network, att, list(reversed(ran)), prev, att.netns)
    if isinstance(error, PluginError):
        error.cleanup_errors = tuple(failed)
    if failed:
        for e in failed:
            log.error("undoing the ADD of %s left something behind: %s", att.container_id, e)
    elif store is not None:
        store.remove(att)


def _delete(
    plugins: Plugins,
    network: NetworkConfig,
    att: Attachment,
    order: Sequence[PluginConfig],
    prev: Mapping[str, Any] | None,
    netns: str,
) -> list[PluginError]:
    errors = []
    for plugin in order:
        try:
            _call(plugins, network, plugin, "DEL", att, prev, netns)
        except PluginError as e:
            errors.append(e)
    return errors


def detach(
    attachment: Attachment,
    *,
    plugins: Plugins | None = None,
    store: AttachmentStore | None = None,
) -> None:
    """DEL `attachment` through its chain in reverse order (idempotent).

    Uses the conflist stored in the attachment, not the file of today. A network namespace
    that is gone already is passed as an empty `CNI_NETNS` (the spec allows it), so plugins
    still release IP addresses and iptables rules. Raises DetachFailed after every plugin
    ran if any failed; the store keeps the record then, and forgets it otherwise.
    """
    plugins = plugins or Plugins()
    network = attachment.network_config()
    prev = attachment.result.to_json() if attachment.result is not None else None
    netns = attachment.netns if attachment.netns and os.path.exists(attachment.netns) else ""
    started = time.monotonic()
    errors = _delete(plugins, network, attachment, list(reversed(network.plugins)), prev, netns)
    if errors:
        raise DetachFailed(network.name, attachment.container_id, tuple(errors))
    if store is not None:
        store.remove(attachment)
    log.info(
        "detached %s from network %s in %.3f s",
        attachment.container_id,
        network.name,
        time.monotonic() - started,
    )


def check(attachment: Attachment, *, plugins: Plugins | None = None) -> None:
    """CHECK `attachment` (nothing if its network sets `disableCheck`); raises PluginError
    from the first plugin that finds something wrong."""
    network = attachment.network_config()
    if network.disable_check:
        log.debug("network %s disables CHECK", network.name)
        return
    if attachment.result is None:
        raise NetworkError(
            f"cannot CHECK {attachment.container_id} on network {network.name!r}: "
            "its ADD never finished"
        )
    plugins = plugins or Plugins()
    prev = attachment.result.to_json()
    for plugin in network.plugins:
        _call(plugins, network, plugin, "CHECK", attachment, prev, attachment.netns)
