// weftd with the host-gw backend on 3 namespace hosts, file store.
import { backendSuite } from './agent-suite.js';

backendSuite({ backend: 'host-gw', store: 'file' });
