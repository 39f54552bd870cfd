package argspec

import "sync"

const frontendFile = "data/dynamo-frontend.tsv"

var frontendRows = sync.OnceValue(func() []Flag { return mustLoad(frontendFile) })

// DynamoFrontend is the grammar of python3 -m dynamo.frontend as of
// ai-dynamo/dynamo frontend_args.py @c6b40e78 (older than DynamoSGLang's
// Dynamo snapshot; see the data file for what newer versions add). The real
// program parses with parse_known_args: an argv whose only fault is unknown
// arguments is not an argparse error there (main.py logs them and exits 1),
// so a stand-in should treat an *Error with Unrecognized set accordingly.
func DynamoFrontend() *Table {
	return mustTable(&Table{
		Tool:    "python3 -m dynamo.frontend",
		Version: "ai-dynamo/dynamo main@c6b40e7877acd161538f9f5683d7af6fbbdf670e",
		Source: "ai-dynamo/dynamo components/src/dynamo/frontend/frontend_args.py @c6b40e7877acd161538f9f5683d7af6fbbdf670e, " +
			"main.py @ed34fa255d13cd9eebad9c041df9eb3740e27b56; see " + frontendFile,
	}, append([]Flag{helpFlag()}, frontendRows()...))
}
