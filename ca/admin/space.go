package admin

import (
	"errors"
	"log/slog"
	"syscall"

	"github.com/badge-dev/badge/internal/logkey"
)

// retryNoSpace runs write, and once more if it failed for lack of disk
// space and Config.OnNoSpace freed some: a revocation must be recordable
// even when something else has filled the data directory's filesystem.
func (s *Server) retryNoSpace(write func() error) error {
	err := write()
	if err == nil || !errors.Is(err, syscall.ENOSPC) || s.onNoSpace == nil {
		return err
	}
	if !s.onNoSpace() {
		s.log.Error("disk full and no space left to release", slog.Any(logkey.Error, err))
		return err
	}
	return write()
}
