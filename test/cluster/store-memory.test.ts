// The shared SubnetStore contract against the in-memory store the unit tests stand on, so that
// what the agent's unit tests learn from it holds for the real stores too.
import { MemorySpace, MemoryStore } from '../../src/store/memory/memory-store.js';
import { storeContract } from './store-contract.js';

let space = new MemorySpace();
storeContract('memory', {
  async setup() { space = new MemorySpace(); },
  open: (prefix) => new MemoryStore({ space, prefix }),
  // No back door exists into memory: another client's delete is the nearest to a hand edit.
  async removeByHand(prefix, subnet) { await new MemoryStore({ space, prefix }).deleteSubnet(subnet); },
  async putByHand(prefix, key, value) { new MemoryStore({ space, prefix }).putRaw(key, value, 60); },
});
