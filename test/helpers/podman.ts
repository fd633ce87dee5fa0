// podman with its state in a temporary directory: the demo's runner (src/demo/podman.ts).
export { BUSYBOX, CNI_CACHE, cleanCniCache, Podman } from '../../src/demo/podman.js';
