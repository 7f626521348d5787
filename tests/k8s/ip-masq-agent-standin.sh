#!/bin/sh
# Stand-in for ip-masq-agent v2.7 on its default config: every few
# seconds, what upstream's sync writes (its chain, one RETURN per
# non-masquerade CIDR with link-local first, then MASQUERADE, through
# iptables-restore --noflush) and its POSTROUTING jump if missing.
set -eu
# As upstream (a Go program) does, exit at once on SIGTERM.
trap 'exit 0' TERM
comment='ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain'
local='ip-masq-agent: local traffic is not subject to MASQUERADE'
while :; do
  iptables-restore --noflush <<RULES
*nat
:IP-MASQ-AGENT - [0:0]
-A IP-MASQ-AGENT -d 169.254.0.0/16 -m comment --comment "$local" -j RETURN
-A IP-MASQ-AGENT -d 10.0.0.0/8 -m comment --comment "$local" -j RETURN
-A IP-MASQ-AGENT -d 172.16.0.0/12 -m comment --comment "$local" -j RETURN
-A IP-MASQ-AGENT -d 192.168.0.0/16 -m comment --comment "$local" -j RETURN
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE --random-fully
COMMIT
RULES
  iptables -t nat -C POSTROUTING -m comment --comment "$comment" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT 2>/dev/null \
    || iptables -t nat -A POSTROUTING -m comment --comment "$comment" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT
  sleep 5 &
  wait $!
done
