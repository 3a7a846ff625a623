// Package redisconn opens the Redis that mailgate's redis settings name: a
// single server, a master found through Sentinel, or a Cluster. mailgate
// and the helpdesk's consumers connect through it, so that both read the
// same settings the same way.
package redisconn

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options are mailgate's redis.url, redis.addrs and redis.master_name.
type Options struct {
	// URL is a go-redis URL (redis://, rediss://, unix://). With Addrs it
	// gives only the credentials, database and TLS: its host is not used.
	// Empty: DefaultURL.
	URL string
	// Addrs are the sentinels when MasterName is set, else the seed nodes
	// of a Cluster. Empty: the single server at URL.
	Addrs []string
	// MasterName selects Sentinel: the sentinels at Addrs say which server
	// is the master now.
	MasterName string
	// DialTimeout bounds connecting; 0 is go-redis's default (5s).
	DialTimeout time.Duration
}

// clusterReload bounds how stale a Cluster client's map of slots to
// masters may get, hence how long a failover can go unnoticed.
const clusterReload = 2 * time.Second

// DefaultURL is mailgate's default redis.url: a Redis on this machine.
const DefaultURL = "redis://127.0.0.1:6379/0"

// New returns a client for o. It does not connect: the first command does.
func New(o Options) (redis.UniversalClient, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	switch {
	case o.MasterName != "":
		fo, err := redis.ParseFailoverURL(addQuery(o.URL, "master_name", o.MasterName))
		if err != nil {
			return nil, err
		}
		if len(o.Addrs) > 0 {
			fo.SentinelAddrs = o.Addrs
		}
		fo.DialTimeout = o.DialTimeout
		return redis.NewFailoverClient(fo), nil
	case len(o.Addrs) > 0:
		co, err := redis.ParseClusterURL(o.URL)
		if err != nil {
			return nil, err
		}
		co.Addrs = o.Addrs
		co.DialTimeout = o.DialTimeout
		// A dead master answers nothing, so no MOVED tells the client
		// that its replica took over: only the periodic reload does.
		// go-redis's default of a minute stalls mailgate that long after
		// a failover; a CLUSTER SLOTS every few seconds costs nothing.
		co.ClusterStateReloadInterval = clusterReload
		return redis.NewClusterClient(co), nil
	}
	so, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, err
	}
	so.DialTimeout = o.DialTimeout
	return redis.NewClient(so), nil
}

// String says which Redis o points at, for logs and errors, without the
// password: the sentinels and master name, the Cluster's seeds, or the URL.
func (o Options) String() string {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	switch {
	case o.MasterName != "":
		return fmt.Sprintf("master %q via sentinels %s", o.MasterName, strings.Join(o.sentinels(), ","))
	case len(o.Addrs) > 0:
		return "cluster via " + strings.Join(o.Addrs, ",")
	}
	return RedactURL(o.URL)
}

// sentinels are the addresses New asks for the master: Addrs, else the
// URL's host.
func (o Options) sentinels() []string {
	if len(o.Addrs) > 0 {
		return o.Addrs
	}
	fo, err := redis.ParseFailoverURL(o.URL)
	if err != nil {
		return []string{RedactURL(o.URL)}
	}
	return fo.SentinelAddrs
}

// RedactURL hides a password in a Redis URL before it is printed.
func RedactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	return u[:scheme+3] + "****" + u[at:]
}

func addQuery(u, key, value string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + key + "=" + url.QueryEscape(value)
}
