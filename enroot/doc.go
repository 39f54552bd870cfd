// Package enroot knows containers: how to tell that pyxis already placed the
// launcher inside one (env.go), and, when the launcher manages containers
// itself (--runtime enroot), how to import an image once into a shared cache
// (importer.go), name it (image.go) and build the enroot command lines that
// create, start and remove the job's container (argv.go).
//
// The command lines follow the grammar of enroot 4.1.2 (the newest tag). It
// was derived from NVIDIA/enroot's own source, read (not copied) through the
// project's code index: enroot.in and src/docker.sh at commit
// 4325eb8c2a1be36e4d32c74061acbd0dd73365be (the 4.0 commit that added
// "enroot load"; the index maps no commit to the v4.1.2 tag, and the option
// parser has not changed since, per the project notes' reading of v4.1.2),
// src/runtime.sh at 08647f1eb7f784703f5c9a53f5ad2d84e83e99af and
// 22832b0b59691fef35fa9ff51a4c2dc5c2cae61d, src/common.sh at
// 0034f62e32b161ff722f20513c27fdb9022802a5, bin/enroot-switchroot.c at
// 22832b0b59691fef35fa9ff51a4c2dc5c2cae61d. Package enroot/standin is a
// strict stand-in for the real tool, for tests; its grammar.go lists the
// rules.
package enroot
