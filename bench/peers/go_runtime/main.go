// The Go peer of bench/runtime_bench: the same workloads (docs/benchmarks.md), the same
// `name value unit` lines. Run with GOMAXPROCS=2.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var total, rss int64
	fmt.Sscan(string(b), &total, &rss)
	return rss * int64(os.Getpagesize())
}

func spawnJoin(n int) float64 {
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { wg.Done() }()
	}
	wg.Wait()
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}

func yieldLoop(n int) float64 {
	var ns float64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		t0 := time.Now()
		for i := 0; i < n; i++ {
			runtime.Gosched()
		}
		ns = float64(time.Since(t0).Nanoseconds()) / float64(n)
		wg.Done()
	}()
	wg.Wait()
	return ns
}

func parkedBytes(n int) float64 {
	ch := make(chan struct{})
	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	runtime.GC()
	before := rssBytes()
	for i := 0; i < n; i++ {
		go func() {
			parked.Done()
			<-ch
			done.Done()
		}()
	}
	parked.Wait()
	// Let the last ones reach the receive.
	time.Sleep(50 * time.Millisecond)
	per := float64(rssBytes()-before) / float64(n)
	close(ch)
	done.Wait()
	return per
}

func main() {
	onlyParked := len(os.Args) > 1 && os.Args[1] == "--parked-only"
	fmt.Printf("procs %d\n", runtime.GOMAXPROCS(0))
	if !onlyParked {
		spawnJoin(100000)
		fmt.Printf("spawn_join_ns %.1f ns\n", spawnJoin(1000000))
		fmt.Printf("yield_ns %.1f ns\n", yieldLoop(10000000))
	}
	fmt.Printf("parked_goroutine_bytes %.1f B\n", parkedBytes(1000000))
}
