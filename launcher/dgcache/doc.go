// Package dgcache keeps precompiled DeepGEMM kernels in a cache shared by
// all jobs, so that one job compiles a worker layout's kernels
// (python3 -m sglang.compile_deep_gemm, 10-30 minutes cold) and every later
// job with the same layout only copies them.
//
// The cache is <cache-dir>/deepgemm/ (Cache.Dir) with one entry per distinct
// worker layout, named <role>-<key> (EntryName, Key):
//
//	<cache-dir>/deepgemm/prefill-0123456789abcdef/
//	    cache/kernel.<name>.<hash>/{kernel.cu,kernel.cubin}   DeepGEMM's own layout
//	    COMPLETE.json                                         written last (Complete)
//	<cache-dir>/deepgemm/.prefill-0123456789abcdef.lock       held by the compiling job
//
// An entry is prepared under a staging name and renamed into place with its
// COMPLETE.json already inside (sharedcache.PublishDir), so a directory under
// the final name is always whole. Workers never run on the shared entry
// itself: each node copies it to node-local storage first (Seed), because
// DeepGEMM writing into a shared NFS directory from many nodes at once
// crashes on half-written cubins (srt-slurm's "kernel_runtime.hpp:45"
// race).
//
// The orchestration (who compiles, the barrier, timeouts) lives in
// launcher/node; this package gives it the pieces:
//
//	claim, hit, err := cache.Claim(ctx, role, key, owner, onWait)
//	if !hit {
//	    defer claim.Abandon() // a no-op once Publish succeeded
//	    ... run compile_deep_gemm into a node-local dir, Judge the result ...
//	    claim.Publish(localDir, complete)
//	}
//	Seed(entryPath, localDir) // on every node of the worker
package dgcache
