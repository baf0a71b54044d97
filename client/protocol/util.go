package protocol

import "time"

var timeZero time.Time

func timerC(d time.Duration) <-chan time.Time { return time.After(d) }
