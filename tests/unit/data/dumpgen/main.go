// dumpgen produces the real goroutine dumps and crash logs under tests/unit/data/.
//
//	go run . serve           # HTTP on 127.0.0.1:$PORT: /leak leaks one goroutine per request,
//	                         # /debug/pprof/goroutine?debug=2; two goroutines deadlock at start;
//	                         # a GC every 5 s so dumps show how many minutes goroutines waited
//	go run -race . race      # a data race (WARNING: DATA RACE report), then exits
//	go run . mapwrites       # fatal error: concurrent map writes
//	go run ./asleep          # fatal error: all goroutines are asleep - deadlock!
//	go run . panic           # panic: with a stack
package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"sync"
	"time"
)

var (
	lockA, lockB sync.Mutex
	never        = make(chan int)
)

// leakyHandler starts a goroutine that waits on a channel nobody ever writes.
func leakyHandler(w http.ResponseWriter, r *http.Request) {
	go waitForReply(make(chan string))
	fmt.Fprintln(w, "ok")
}

func waitForReply(reply chan string) {
	<-reply
}

// transfer takes two locks in the order given: two callers with opposite orders deadlock.
func transfer(first, second *sync.Mutex, ready *sync.WaitGroup) {
	first.Lock()
	ready.Done()
	ready.Wait()
	second.Lock()
}

func serve() {
	var ready sync.WaitGroup
	ready.Add(2)
	go transfer(&lockA, &lockB, &ready)
	go transfer(&lockB, &lockA, &ready)
	go func() { never <- 1 }()
	// Blocked goroutines show "N minutes" in dumps only once a GC has stamped their wait.
	go func() {
		for range time.Tick(5 * time.Second) {
			runtime.GC()
		}
	}()
	http.HandleFunc("/leak", leakyHandler)
	addr := "127.0.0.1:" + os.Getenv("PORT")
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func race() {
	counter := 0
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counter++
		}()
	}
	wg.Wait()
	fmt.Println("counter", counter)
}

func mapwrites() {
	m := map[int]int{}
	for i := 0; i < 4; i++ {
		go func() {
			for j := 0; ; j++ {
				m[j%100] = j
			}
		}()
	}
	time.Sleep(5 * time.Second)
}

func main() {
	switch os.Args[1] {
	case "serve":
		serve()
	case "race":
		race()
	case "mapwrites":
		mapwrites()
	case "panic":
		var m map[string]int
		m["boom"] = 1
	}
}
