//go:build !cgo

package deadlock

// Detectable is true: without cgo the runtime reports a global deadlock.
const Detectable = true
