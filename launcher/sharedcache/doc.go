// Package sharedcache keeps entries that many jobs on many nodes share on one
// filesystem (container images, DeepGEMM kernel directories), which is
// usually NFS or Lustre.
//
// It holds two things:
//
//   - lock files (lock.go) that work without flock, because flock on NFS
//     needs NLM or local_lock=none and on Lustre a mount option, and a
//     launcher cannot know which it got. A lock is a file created with
//     O_CREAT|O_EXCL (atomic on NFSv3 and later) whose holder touches its
//     mtime every interval; a lock nobody touched for three intervals, or
//     whose job the caller knows is gone, is stale and is broken by renaming
//     it aside, so that two breakers cannot both win;
//   - staging names and publishing (publish.go): work is written under a
//     hidden name unique to the job and process, then published under the
//     final name without ever replacing an entry someone may be reading
//     (link(2) for files, a checked rename(2) for directories).
//
// A reader only ever looks at final names, so it sees a whole entry or none.
package sharedcache
