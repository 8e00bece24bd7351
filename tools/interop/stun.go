// SPDX-License-Identifier: MIT

package main

// The STUN cases use Tailscale's own net/stun package, the code tailscaled's
// netcheck runs, against kderpd's STUN port (user space or XDP).

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"tailscale.com/net/stun"
)

// stunExchange sends one binding request from a fresh UDP socket and returns
// the reply bytes, or nil when nothing came back within wait (3 tries).
func stunExchange(ctx context.Context, server string, req []byte, wait time.Duration) ([]byte, *net.UDPConn, error) {
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 1500)
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		if _, err := conn.WriteToUDP(req, raddr); err != nil {
			conn.Close()
			return nil, nil, err
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		n, from, err := conn.ReadFromUDP(buf)
		if err == nil && from.Port == raddr.Port {
			return buf[:n], conn, nil
		}
	}
	return nil, conn, nil
}

// caseSTUN: net/stun's request gets a reply that net/stun parses, with the
// same transaction id and our own address and port.
func caseSTUN(ctx context.Context, e *env) error {
	if e.stunAddr == "" {
		return errSkip{"no -stun address given"}
	}
	tx := stun.NewTxID()
	reply, conn, err := stunExchange(ctx, e.stunAddr, stun.Request(tx), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if reply == nil {
		return fmt.Errorf("no STUN reply from %s", e.stunAddr)
	}
	gotTx, mapped, err := stun.ParseResponse(reply)
	if err != nil {
		return fmt.Errorf("net/stun cannot parse the reply: %w", err)
	}
	if gotTx != tx {
		return fmt.Errorf("transaction id %x, want %x", gotTx, tx)
	}
	local := conn.LocalAddr().(*net.UDPAddr)
	if int(mapped.Port()) != local.Port {
		return fmt.Errorf("mapped port %d, want %d", mapped.Port(), local.Port)
	}
	server, err := netip.ParseAddrPort(e.stunAddr)
	if err == nil && server.Addr().Unmap().IsLoopback() && !mapped.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("mapped address %v is not loopback", mapped.Addr())
	}
	if e.stunWant != "" && mapped.Addr().Unmap().String() != e.stunWant {
		return fmt.Errorf("mapped address %v, want %s", mapped.Addr(), e.stunWant)
	}
	return nil
}

// caseSTUNIgnored: a binding request without Tailscale's SOFTWARE attribute
// (a generic STUN client's) gets no answer, as from derper.
func caseSTUNIgnored(ctx context.Context, e *env) error {
	if e.stunAddr == "" {
		return errSkip{"no -stun address given"}
	}
	req := stun.Request(stun.NewTxID())
	// Corrupt the SOFTWARE value: the FINGERPRINT no longer matches either.
	req = bytes.Replace(req, []byte("tailnode"), []byte("othernode"[:8]), 1)
	reply, conn, err := stunExchange(ctx, e.stunAddr, req, 300*time.Millisecond)
	if err != nil {
		return err
	}
	conn.Close()
	if reply != nil {
		return fmt.Errorf("got a %d-byte reply to a non-Tailscale request", len(reply))
	}
	return nil
}
