// weftd with the vxlan backend on 3 namespace hosts, file store.
import { backendSuite } from './agent-suite.js';

backendSuite({ backend: 'vxlan', store: 'file' });
