// Control: idle worker pool: eight workers wait on a job channel that gets a job only every few seconds.
// Expect: none
package main

import "time"

func worker(jobs <-chan int, done chan<- int) {
	for j := range jobs {
		done <- j * 2
	}
}

func main() {
	jobs, done := make(chan int), make(chan int, 8)
	for w := 0; w < 8; w++ {
		go worker(jobs, done)
	}
	for i := 0; ; i++ {
		jobs <- i
		<-done
		time.Sleep(4 * time.Second)
	}
}
