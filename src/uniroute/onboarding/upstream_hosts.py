"""Which hosts models may be served from: the gateway's ``upstream_allowlist`` as a policy.

An :class:`EndpointPolicy` says whether an endpoint's host may be called, and if not, why. Its
allow-list entries are host names (``api.openai.com``, exact; ``*.internal``, any name below
``internal`` but not ``internal`` itself) and IP networks (``10.0.0.0/8``, ``fd00::/8``, or one
address such as ``::1``).

* **Empty allow-list**: any host, except link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``) and the cloud metadata services (``169.254.169.254``, ``fd00:ec2::254``,
  ``100.100.100.200``, ``metadata.google.internal``, ``metadata.goog``, ``metadata``).
* **Non-empty allow-list**: only the hosts it lists. A host name must match a name entry; an IP
  literal must lie in a network entry (network entries never admit host names, so that the check
  made before each call needs no DNS and gives the same answer as the one made when the model
  was added).
* Link-local and metadata hosts stay refused unless **named explicitly**: by an exact name entry,
  or by a network entry inside those ranges (``169.254.169.254``, ``169.254.0.0/16``). A broad
  entry (``0.0.0.0/0``, ``*.internal``, ``fd00::/8``) never admits them.
* An IPv6 address that carries an IPv4 one (mapped ``::ffff:169.254.169.254``, compatible,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is checked as both. Numeric hosts that resolvers
  read as IPv4 in decimal, octal or hex (``2852039166``) are refused by the endpoint rule itself
  (:mod:`uniroute.onboarding.endpoints`), so they never reach the policy as names.

:meth:`EndpointPolicy.refusal` is the check made before each upstream call: the endpoint's own
text only (no DNS), cached per base URL. :meth:`EndpointPolicy.check` is the one made when a
model is added or onboarded: the same, then the host name is resolved and refused if any of its
addresses is link-local or metadata (and not explicitly allowed). A name that does not resolve
(within ``resolve_timeout_s``) is **not** refused: the gateway may resolve names the adding
process cannot (a service name inside a container network, a split-horizon zone), and a name
that resolves nowhere cannot reach anything; onboarding then fails to connect with its own
error.

Residual risk: **DNS rebinding**. A name is resolved when the model is added, not before each
call, so a name whose records later change to a link-local or metadata address is still called.
Where that matters, list the upstreams by IP address or network, or by names in a zone you
control, in a non-empty allow-list.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Sequence

from uniroute.errors import ConfigError, RegistryError, UsageError
from uniroute.onboarding.endpoints import EndpointURL, host_problem, parse_endpoint, shown_endpoint

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Resolves a host name to its addresses (as text); raises OSError when it cannot.
Resolver = Callable[[str], Sequence[str]]

LINK_LOCAL_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
)
METADATA_ADDRESSES: tuple[IPAddress, ...] = (
    ipaddress.ip_address("169.254.169.254"),  # AWS, Azure, GCP, Oracle, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_SENSITIVE_NETWORKS: tuple[IPNetwork, ...] = LINK_LOCAL_NETWORKS + tuple(
    ipaddress.ip_network(address) for address in METADATA_ADDRESSES
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_EXPLICIT = "refused unless the gateway's upstream_allowlist names it explicitly"
#: Base URLs whose answer ``refusal`` keeps; the cache starts over when it is full.
_CACHE_SIZE = 4096


def _resolve_with_getaddrinfo(host: str) -> list[str]:
    """The addresses ``host`` resolves to (any family), by the system resolver."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


def _addresses_of(ip: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address it carries (mapped, compatible, NAT64, 6to4)."""
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        elif ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        elif ip.sixtofour is not None:
            found.append(ip.sixtofour)
    return found


def _is_sensitive(ip: IPAddress) -> bool:
    return any(ip.version == net.version and ip in net for net in _SENSITIVE_NETWORKS)


def _parse_entry(entry: object) -> tuple[str, str | IPNetwork]:
    """An allow-list entry as ("name" | "suffix" | "network", value), or ConfigError naming it."""
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"upstream_allowlist entry {entry!r}: must be a non-empty string")
    text = entry.strip()
    shape = "entries are host names, '*.suffix' wildcards or IP networks, without scheme or port"
    if "://" in text:
        raise ConfigError(f"upstream_allowlist entry {entry!r}: {shape}")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" in bare:
        raise ConfigError(
            f"upstream_allowlist entry {entry!r}: an IPv6 zone id ('%...') is not supported"
        )
    try:
        return "network", ipaddress.ip_network(bare, strict=True)
    except ValueError as exc:
        if "/" in bare or ":" in bare:
            raise ConfigError(
                f"upstream_allowlist entry {entry!r}: not a valid IP network ({exc}); {shape}"
            ) from None
    kind, name = ("suffix", text[2:]) if text.startswith("*.") else ("name", text)
    problem = "'*' may only open a '*.suffix' wildcard" if "*" in name else host_problem(name)
    if problem is not None:
        raise ConfigError(f"upstream_allowlist entry {entry!r}: {problem}; {shape}")
    return kind, name.lower()


def _inside(network: IPNetwork, outer: IPNetwork) -> bool:
    """Whether ``network`` lies wholly inside ``outer`` (False across IP versions)."""
    return (
        network.version == outer.version
        and int(outer.network_address) <= int(network.network_address)
        and int(network.broadcast_address) <= int(outer.broadcast_address)
    )


class EndpointPolicy:
    """Which upstream hosts may be called, from the gateway's ``upstream_allowlist``.

    See the module's docstring for the semantics. ``resolve`` replaces the system resolver
    (``socket.getaddrinfo``) used by :meth:`check`, which waits for it at most
    ``resolve_timeout_s`` seconds.
    """

    def __init__(
        self,
        allowlist: Iterable[str] = (),
        *,
        resolve: Resolver | None = None,
        resolve_timeout_s: float = 2.0,
    ) -> None:
        if isinstance(allowlist, str):
            raise ConfigError(
                f"upstream_allowlist must be a list of host names and networks, got {allowlist!r}"
            )
        self.allowlist: tuple[str, ...] = tuple(allowlist)
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in self.allowlist:
            kind, value = _parse_entry(entry)
            if isinstance(value, str) and kind == "name":
                names.add(value)
            elif isinstance(value, str):
                suffixes.append("." + value)
            else:
                networks.append(value)
        self._names = frozenset(names)
        self._suffixes = tuple(suffixes)
        self._networks = tuple(networks)
        self._resolve = resolve or _resolve_with_getaddrinfo
        self._resolve_timeout_s = resolve_timeout_s
        self._refusals: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"EndpointPolicy({list(self.allowlist)!r})"

    # ------------------------------------------------------------------ the checks
    def refusal(self, base_url: str) -> str | None:
        """Why the gateway may not call this base URL (None: it may); no DNS, cached."""
        try:
            return self._refusals[base_url]
        except KeyError:
            pass
        try:
            reason = self._refusal_of(parse_endpoint(base_url))
        except UsageError as exc:
            reason = str(exc)
        if len(self._refusals) >= _CACHE_SIZE:
            self._refusals.clear()
        self._refusals[base_url] = reason
        return reason

    def check(self, endpoint: str, error: type[UsageError] = RegistryError) -> None:
        """Refuse (``error``) an endpoint whose host may not be called, resolving host names."""
        parts = parse_endpoint(endpoint, error)
        reason = self._refusal_of(parts)
        if reason is None and parts.ip is None:
            reason = self._resolved_refusal(parts.host)
        if reason is not None:
            raise error(f"endpoint {shown_endpoint(parts.text)}: {reason}")

    # ------------------------------------------------------------------ the rules
    def _refusal_of(self, parts: EndpointURL) -> str | None:
        ip = parts.ip
        if ip is not None:
            label = f"host {parts.host!r}"
            reason = self._sensitive_refusal(ip, label)
            if reason is None and self.allowlist and not self._listed(ip):
                reason = f"{label} is not in upstream_allowlist {list(self.allowlist)}"
            return reason
        host = parts.host
        if host in METADATA_HOSTS and host not in self._names:
            return f"host {host!r} is a cloud metadata service; {_EXPLICIT}"
        listed = host in self._names or any(host.endswith(s) for s in self._suffixes)
        if self.allowlist and not listed:
            return f"host {host!r} is not in upstream_allowlist {list(self.allowlist)}"
        return None

    def _sensitive_refusal(self, ip: IPAddress, label: str) -> str | None:
        """Why ``ip`` is refused for being link-local or metadata (None: it is neither, or the
        allow-list names it explicitly)."""
        for address in _addresses_of(ip):
            if _is_sensitive(address) and not self._explicitly_allowed(address):
                kind = "cloud metadata" if address in METADATA_ADDRESSES else "link-local"
                carried = "" if address == ip else f" (it carries {address})"
                return f"{label} is a {kind} address{carried}; {_EXPLICIT}"
        return None

    def _resolved_refusal(self, host: str) -> str | None:
        for text in self._resolved(host):
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue
            label = f"host {host!r} resolves to {address}, which"
            reason = self._sensitive_refusal(address, label)
            if reason is not None:
                return reason
        return None

    def _resolved(self, host: str) -> Sequence[str]:
        """The addresses of ``host``, or none when it does not resolve in time."""
        found: list[Sequence[str]] = []

        def resolve() -> None:
            with contextlib.suppress(OSError, UnicodeError):
                found.append(self._resolve(host))

        # getaddrinfo has no timeout of its own: a thread that may outlive the wait does it.
        worker = threading.Thread(target=resolve, name="uniroute-resolve", daemon=True)
        worker.start()
        worker.join(self._resolve_timeout_s)
        return found[0] if found else ()

    def _listed(self, ip: IPAddress) -> bool:
        """Whether the allow-list's networks hold the address or an IPv4 address it carries."""
        return any(
            address.version == net.version and address in net
            for address in _addresses_of(ip)
            for net in self._networks
        )

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        """Listed by a network entry that lies inside the link-local or metadata ranges."""
        return any(
            ip.version == net.version
            and ip in net
            and any(_inside(net, sensitive) for sensitive in _SENSITIVE_NETWORKS)
            for net in self._networks
        )
