// weftd with the vxlan backend on 3 namespace hosts, store = a real etcd (running inside the
// topology's outside namespace, reached over the underlay); ends by killing etcd.
import { backendSuite } from '../netns/agent-suite.js';

backendSuite({ backend: 'vxlan', store: 'etcd' });
