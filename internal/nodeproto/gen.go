// Package nodeproto is the generated code of the protocol between badge
// agents and badge server (node.proto).
package nodeproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative node.proto
