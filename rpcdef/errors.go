package rpcdef

import (
	"errors"
	"fmt"
	"net/rpc"
	"strings"
)

// Code classifies an error a server returns, so that a client can act on it.
// net/rpc carries errors as strings; a Code travels as the string's prefix
// and the stubs turn it back into an *Error.
type Code string

// The codes muster's servers return.
const (
	CodePermission       Code = "permission denied"
	CodeUnknownLease     Code = "unknown lease"
	CodeNotFound         Code = "not found"
	CodeConflict         Code = "conflict"
	CodeInvalid          Code = "invalid argument"
	CodeStaleIncarnation Code = "stale incarnation"
	CodeNotJoined        Code = "not joined"
	CodeUnavailable      Code = "unavailable"
	CodeIncompatible     Code = "incompatible version"
	// CodeNotLeader: this master is a follower; the message names the
	// leader and its address when one is known (see NotLeader).
	CodeNotLeader Code = "not the leader"
)

var codes = []Code{CodePermission, CodeUnknownLease, CodeNotFound, CodeConflict, CodeInvalid,
	CodeStaleIncarnation, CodeNotJoined, CodeUnavailable, CodeIncompatible, CodeNotLeader}

// Error is an error with a code, returned by a muster server.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Msg
}

// Is makes errors.Is(err, rpcdef.ErrPermission) true for every permission error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Code == e.Code
}

// Sentinels to compare with errors.Is.
var (
	ErrPermission       = &Error{Code: CodePermission}
	ErrUnknownLease     = &Error{Code: CodeUnknownLease}
	ErrNotFound         = &Error{Code: CodeNotFound}
	ErrConflict         = &Error{Code: CodeConflict}
	ErrInvalid          = &Error{Code: CodeInvalid}
	ErrStaleIncarnation = &Error{Code: CodeStaleIncarnation}
	ErrNotJoined        = &Error{Code: CodeNotJoined}
	ErrUnavailable      = &Error{Code: CodeUnavailable}
	ErrIncompatible     = &Error{Code: CodeIncompatible}
	ErrNotLeader        = &Error{Code: CodeNotLeader}
)

// Errorf makes a coded error for a server to return.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// fromWire turns an error string from the server back into an *Error.
func fromWire(err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return err
	}
	s := string(se)
	for _, c := range codes {
		if s == string(c) {
			return &Error{Code: c}
		}
		if rest, ok := strings.CutPrefix(s, string(c)+": "); ok {
			return &Error{Code: c, Msg: rest}
		}
	}
	return se
}

// MustRejoin says the master no longer counts the caller's incarnation as
// joined: the slave must join again.
func MustRejoin(err error) bool {
	return errors.Is(err, ErrStaleIncarnation) || errors.Is(err, ErrNotJoined)
}

// NoAnswer says a call got no answer from the server: the connection broke,
// could not be made, or the deadline passed (which closes it). An answer,
// even a refusal, is not that.
func NoAnswer(err error) bool {
	var coded *Error
	var server rpc.ServerError
	return err != nil && !errors.As(err, &coded) && !errors.As(err, &server)
}

// leaderIs is how NotLeader names the leader, and LeaderOf reads it back:
// net/rpc carries only the error's string.
const leaderIs = "the leader is "

// NotLeader is a follower's answer to a call only the leader serves: "not
// the leader: the leader is m2 at 10.0.0.2:7112", or, during an election,
// that no leader is known yet.
func NotLeader(name, addr string) error {
	if name == "" || addr == "" {
		return Errorf(CodeNotLeader, "no leader is known yet (an election is under way): retry in a moment")
	}
	return Errorf(CodeNotLeader, "%s%s at %s", leaderIs, name, addr)
}

// LeaderOf reads the leader's name and ClusterService address out of a
// NotLeader error; ok is false for any other error, and for a NotLeader
// that names no leader.
func LeaderOf(err error) (name, addr string, ok bool) {
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeNotLeader {
		return "", "", false
	}
	rest, found := strings.CutPrefix(e.Msg, leaderIs)
	if !found {
		return "", "", false
	}
	name, addr, ok = strings.Cut(rest, " at ")
	if !ok || name == "" || addr == "" || strings.ContainsAny(addr, " \n") {
		return "", "", false
	}
	return name, addr, true
}
