export { NETNS_RUN_DIR, netnsPath, netnsExists, createNamedNetns, deleteNamedNetns, listNamedNetns, runInNetns, type RunResult } from './netns.js';
export { readSysctl, writeSysctl, sysctlKeyPath } from './sysctl.js';
