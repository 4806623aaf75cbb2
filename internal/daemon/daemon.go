// Package daemon holds what every muster daemon's main does the same way:
// its command line, its logger, its signals and its readiness line.
package daemon

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// NewLogger makes a daemon's own logger, writing to stderr at level.
func NewLogger(level string) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	if lv, err := logrus.ParseLevel(level); err == nil {
		l.SetLevel(lv)
	}
	return l
}

// Context ends on SIGINT or SIGTERM.
func Context() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// OnHangup calls reload on every SIGHUP until ctx ends, logging the outcome.
func OnHangup(ctx context.Context, log logrus.FieldLogger, reload func() error) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := reload(); err != nil {
					log.WithError(err).Error("SIGHUP: reload failed; still using the previous certificates")
				} else {
					log.Info("SIGHUP: certificates reloaded")
				}
			}
		}
	}()
}

// Ready logs the line end-to-end tests and scripts wait for.
func Ready(log logrus.FieldLogger, fields logrus.Fields) {
	log.WithFields(fields).Info("ready")
}

// ExpiryWarning is how long before its certificate expires a daemon starts
// to warn about it.
const ExpiryWarning = 30 * 24 * time.Hour

// WarnExpiry logs a warning now and every day while the certificate notAfter
// reports expires within ExpiryWarning, until ctx ends.
func WarnExpiry(ctx context.Context, log logrus.FieldLogger, notAfter func() time.Time, cert string) {
	check := func() {
		left := time.Until(notAfter())
		switch {
		case left <= 0:
			log.Errorf("certificate %s expired %v ago: peers refuse it; reissue it (certgen issue ... --force) and send SIGHUP", cert, (-left).Round(time.Minute))
		case left < ExpiryWarning:
			log.Warnf("certificate %s expires in %v: reissue it (certgen issue ... --force) and send SIGHUP", cert, left.Round(time.Minute))
		}
	}
	check()
	go Every(ctx, 24*time.Hour, func(time.Time) { check() })
}

// Every calls fn with the tick's time every d, until ctx ends.
func Every(ctx context.Context, d time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}
