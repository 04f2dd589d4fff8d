// Bug: receive nobody sends: the fetcher returns early on a cache hit without replying, and its caller waits for a reply for good.
// Expect: partial_deadlock leakprofile
package main

import "time"

type request struct {
	key   string
	reply chan string
}

func fetcher(req request, cache map[string]string) {
	if _, ok := cache[req.key]; ok {
		return // forgot req.reply <- v on the cache-hit path
	}
	req.reply <- "fetched " + req.key
}

func lookup(key string, cache map[string]string) string {
	req := request{key: key, reply: make(chan string)}
	go fetcher(req, cache)
	return <-req.reply // want
}

func main() {
	cache := map[string]string{"hot": "v"}
	go lookup("hot", cache)
	for {
		time.Sleep(50 * time.Millisecond)
	}
}
