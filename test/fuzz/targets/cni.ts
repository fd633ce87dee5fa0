// The slot for the CNI configuration parser. There is no CNI plugin in the tree yet; when one
// lands, its network configuration parser (the JSON a container runtime passes on stdin, with
// CNI_* variables) gets a target here: parse, then validate, with refusals as its outcomes and
// any other exception as a finding, and seeds in test/fuzz/corpus/cni/. Until then the runner
// lists no `cni` target.
import type { FuzzTarget } from '../target.js';

export function cniTarget(): FuzzTarget | null {
  return null;
}
