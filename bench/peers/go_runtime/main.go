// The Go peer of bench/runtime_bench: the same workloads (docs/benchmarks.md), the same
// `name value unit` lines. Run with GOMAXPROCS=2.
package main

import (
	"context"
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

func chanPingpong(n int) float64 {
	ping, pong := make(chan int), make(chan int)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		for i := 0; i < n; i++ {
			pong <- (<-ping) + 1
		}
		wg.Done()
	}()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	ns := float64(time.Since(t0).Nanoseconds()) / float64(n)
	wg.Wait()
	return ns
}

func chanBuffered(n int) float64 {
	c := make(chan int, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	var sum int64
	t0 := time.Now()
	go func() {
		for v := range c {
			sum += int64(v)
		}
		wg.Done()
	}()
	for i := 0; i < n; i++ {
		c <- i
	}
	close(c)
	wg.Wait()
	return float64(n) / time.Since(t0).Seconds()
}

func select2case(n int) float64 {
	a, b := make(chan int, 1), make(chan int, 1)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if i&1 == 1 {
			b <- i
		} else {
			a <- i
		}
		select {
		case <-a:
		case <-b:
		}
	}
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}

func mutexContended(n int) float64 {
	var mu sync.Mutex
	var counter int64
	var wg sync.WaitGroup
	wg.Add(8)
	t0 := time.Now()
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < n; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return float64(time.Since(t0).Nanoseconds()) / (8 * float64(n))
}

func ctxCancelFanout(n int) float64 {
	parent, cancel := context.WithCancel(context.Background())
	var ready, finished sync.WaitGroup
	ready.Add(n)
	finished.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			child, childCancel := context.WithTimeout(parent, time.Hour)
			done := child.Done()
			ready.Done()
			<-done
			childCancel()
			finished.Done()
		}()
	}
	ready.Wait()
	time.Sleep(20 * time.Millisecond)
	t0 := time.Now()
	cancel()
	finished.Wait()
	return float64(time.Since(t0).Nanoseconds()) / float64(n)
}

func want(name string) bool {
	if len(os.Args) < 2 {
		return true
	}
	for _, a := range os.Args[1:] {
		if a == name {
			return true
		}
	}
	return false
}

func main() {
	fmt.Printf("procs %d\n", runtime.GOMAXPROCS(0))
	if want("spawn_join_ns") {
		spawnJoin(100000)
		fmt.Printf("spawn_join_ns %.1f ns\n", spawnJoin(1000000))
	}
	if want("yield_ns") {
		fmt.Printf("yield_ns %.1f ns\n", yieldLoop(10000000))
	}
	if want("chan_pingpong_ns") {
		fmt.Printf("chan_pingpong_ns %.1f ns\n", chanPingpong(1000000))
	}
	if want("chan_buffered_msgs_per_s") {
		fmt.Printf("chan_buffered_msgs_per_s %.1f msg/s\n", chanBuffered(10000000))
	}
	if want("select_2case_ns") {
		fmt.Printf("select_2case_ns %.1f ns\n", select2case(10000000))
	}
	if want("mutex_contended_ns") {
		fmt.Printf("mutex_contended_ns %.1f ns\n", mutexContended(1000000))
	}
	if want("ctx_cancel_fanout_ns") {
		fmt.Printf("ctx_cancel_fanout_ns %.1f ns\n", ctxCancelFanout(100000))
	}
	if want("parked_goroutine_bytes") {
		fmt.Printf("parked_goroutine_bytes %.1f B\n", parkedBytes(1000000))
	}
}
