module github.com/wideep/wideep-launch

go 1.25

require (
	github.com/hashicorp/go-multierror v1.1.1
	github.com/rs/zerolog v1.35.1
	github.com/sethvargo/go-retry v0.5.0
	github.com/spf13/pflag v1.1.0
	github.com/stretchr/testify v1.12.1
	golang.org/x/sys v0.29.0
)

require (
	github.com/hashicorp/errwrap v1.0.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
