//go:build cgo

package deadlock

// Detectable is false in cgo builds: the runtime keeps an extra M for cgo
// callbacks and then never reports "all goroutines are asleep". Build with
// CGO_ENABLED=0 (harness/gobuild.py does, except for -race builds).
const Detectable = false
