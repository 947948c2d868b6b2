// The allocator in one import: config, pure address choice, disk store, lock, operations.
export * from './config.js';
export * from './allocator.js';
export * from './store.js';
export * from '../../fs/lock.js';
export * from './resolv.js';
export * from './ipam.js';
