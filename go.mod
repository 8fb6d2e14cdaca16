module github.com/badge-dev/badge

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/spiffe/go-spiffe/v2 v2.9.0 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	go.step.sm/crypto v0.92.0 // indirect
	go.uber.org/mock v0.6.0 // indirect
	golang.org/x/mod v0.42.0 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/tools v0.51.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261019180522-ce908d29299b // indirect
	google.golang.org/grpc v1.85.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
