// The CNI toolkit in one import: skeleton, env, conf, results, versions, delegation.
export * from './version.js';
export * from './env.js';
export * from './result.js';
export * from './conf.js';
export * from './skel.js';
export * from './exec.js';
