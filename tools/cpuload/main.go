// Command cpuload keeps CPUs busy for a bounded time, so that the network
// namespace suites can be run on a machine as loaded as a user's host
// (`make test-busy`). It spins one goroutine per CPU (or -workers) and
// stops at the first of: -for elapsed, SIGINT/SIGTERM, or its parent
// exiting (so a killed make does not leave it spinning).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	workers := flag.Int("workers", runtime.NumCPU(), "busy goroutines (each on its own OS thread)")
	limit := flag.Duration("for", 30*time.Minute, "stop after this long (at most 2h)")
	flag.Parse()
	if *workers < 1 || *workers > 64 || *limit <= 0 || *limit > 2*time.Hour {
		fmt.Fprintln(os.Stderr, "cpuload: -workers must be 1..64 and -for in (0, 2h]")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*workers + 1)
	var stop atomic.Bool
	var spins atomic.Uint64
	for range *workers {
		go func() {
			runtime.LockOSThread()
			x := uint64(1)
			for n := 0; ; n++ {
				x = x*6364136223846793005 + 1442695040888963407
				if n&0xfffff == 0 {
					if stop.Load() {
						return
					}
					spins.Add(x & 1)
				}
			}
		}()
	}
	fmt.Printf("cpuload: %d busy workers for at most %s (pid %d)\n", *workers, *limit, os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	parent := os.Getppid()
	deadline := time.After(*limit)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case s := <-sig:
			stop.Store(true)
			fmt.Printf("cpuload: %s after %s\n", s, time.Since(start).Round(time.Second))
			return
		case <-deadline:
			stop.Store(true)
			fmt.Printf("cpuload: time limit %s reached\n", *limit)
			return
		case <-tick.C:
			if os.Getppid() != parent {
				stop.Store(true)
				fmt.Println("cpuload: parent exited")
				return
			}
		}
	}
}
