// Package main blocks its only goroutine forever; the runtime reports the deadlock.
// It imports nothing: net/http's background threads would hide the deadlock from the runtime.
package main

func main() {
	ch := make(chan int)
	ch <- 1
}
