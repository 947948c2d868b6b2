// The BGP-4 speaker's public surface, for the agent's bgp backend and weftctl.
export { Speaker, parseSpeakerConfig, peerSchema, speakerConfigSchema } from './speaker.js';
export type { PeerConfigInput, SessionStatus, SpeakerConfig, SpeakerConfigInput, SpeakerEvent, SpeakerOptions } from './speaker.js';
export type { DownReason, FsmStateName } from './fsm.js';
export { ADDRESS_FAMILIES, type AddressFamily } from './family.js';
export { routerIdFromIPv6 } from './router-id.js';
export type { Route } from './rib.js';
export type { AsPathSegment, PathAttributes, UpdateAttributeError } from './codec.js';
export { describeRejection } from './policy.js';
export type { ImportPolicy, ImportRejection, ImportRejectionReason } from './policy.js';
export { BgpError } from './errors.js';
export { type Clock, FakeClock, systemClock } from '../clock.js';
