// Package health is the health gate: node 0 polls the Dynamo frontend until
// the model is served and every expected prefill and decode worker has
// registered. Per-node ports say nothing about readiness (a worker's system
// port binds before its scheduler is ready); the frontend's instance list is
// what counts.
package health
