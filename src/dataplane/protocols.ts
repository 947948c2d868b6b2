// Route protocol numbers (rtm_protocol) weft writes, in one place: every writer tags its routes
// with its own number, and every sync or cleanup matches on it, so weft never replaces or deletes
// a route another protocol (an operator, BIRD, another CNI) owns. iproute2 leaves 5–98 free;
// 200 sits above the range distributions name in /etc/iproute2/rt_protos.

/** weftd's backend routes (vxlan, host-gw, udp): `ip route show proto 87`. */
export const WEFT_ROUTE_PROTOCOL = 87;
/** Routes the bgp backend installs from what its peers advertise: `ip route show proto 88`. */
export const WEFT_BGP_ROUTE_PROTOCOL = 88;
/** weft-routed's host /32 (or /128) routes to its containers: `ip route show proto 200`. */
export const ROUTED_ROUTE_PROTO = 200;
