// The host a plugin process runs on by itself (a runtime exec'd it, or weft's standalone
// fallback): interfaces are deleted right here, and endpoint records need no announcement —
// weftd's policy service, if one runs, follows the record directory on its own.
import type { PluginHost } from '../../cni/skel.js';

export const standalonePluginHost: PluginHost = {
  // Loaded on first use: weft-ipam's process never deletes an interface and need not load netlink.
  deleteContainerInterface: async (env) => (await import('./iface.js')).deleteContainerInterface(env),
  endpointChanged: async () => {},
};
