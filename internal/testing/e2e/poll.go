package e2e

import (
	"fmt"
	"time"
)

// Poll calls check every interval until it reports done or timeout has
// passed. check's second result says what it observed; on timeout Poll
// returns an error carrying the last observation, so a failure tells what
// the test was waiting on rather than only that it waited. One slow answer
// decides nothing: only the deadline does.
func Poll(timeout, interval time.Duration, check func() (done bool, observed string)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, observed := check()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %s", timeout, observed)
		}
		time.Sleep(interval)
	}
}
