package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts the driver runs, one per writing operation. Each touches
// exactly one key (KEYS[1]), so it routes to one hash slot in Redis
// Cluster. The record layout they read and write is described in doc.go;
// the tags below must match tagRecord and tagTombstone in reply.go.
//
// Lua numbers are doubles, exact below 2^53, so a 64-bit version is
// handled as two 32-bit halves (hi, lo).

// casScript compares the version stored under KEYS[1] with ARGV[1] and,
// when they match, stores ARGV[2] under a new version with a time to live
// of ARGV[3] milliseconds, in one step.
//
//	KEYS[1]  the record's Redis key
//	ARGV[1]  the expected version: 8 bytes big-endian, or "" for absent
//	ARGV[2]  the new value
//	ARGV[3]  the time to live in milliseconds (decimal)
//
// Every reply starts with a status and the server's TIME (seconds and
// microseconds, as TIME gives them), so that the driver can report the
// server's clock at no extra round trip (storage.TimedStore). It replies
// {1, s, us, version} when it swapped (version: the 8 bytes stored),
// {0, s, us, record} on conflict with a live record, {0, s, us} on
// conflict with an absent key (or a tombstone), and {2, s, us} when the
// key holds something that is not a sluice record, which it leaves as it
// is.
//
// The new version is max(previous version + 1, server time in
// microseconds * 4096): it grows on every write, and a record written
// after a Delete or an expiry starts above every version the key had,
// because the server clock has moved on by then (see doc.go).
var casScript = goredis.NewScript(`
local t = redis.call('TIME')
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
	return {2, t[1], t[2]}
end
local live = false
if cur then
	local tag = string.byte(cur, 1)
	if tag == 248 and #cur >= 9 and string.sub(cur, 2, 9) ~= string.rep(string.char(0), 8) then
		live = true
	elseif not (tag == 249 and #cur == 9) then
		return {2, t[1], t[2]}
	end
end
if live then
	if string.sub(cur, 2, 9) ~= ARGV[1] then
		return {0, t[1], t[2], cur}
	end
elseif ARGV[1] ~= '' then
	return {0, t[1], t[2]}
end
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local hi = math.floor(us / 1048576)
local lo = (us % 1048576) * 4096
if cur then
	local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(cur, 2, 9)
	local ohi = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
	local olo = ((b5 * 256 + b6) * 256 + b7) * 256 + b8 + 1
	if olo == 4294967296 then
		ohi = ohi + 1
		olo = 0
	end
	if ohi > hi or (ohi == hi and olo > lo) then
		hi = ohi
		lo = olo
	end
end
local ver = string.char(
	math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256,
	math.floor(hi / 256) % 256, hi % 256,
	math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256,
	math.floor(lo / 256) % 256, lo % 256)
redis.call('SET', KEYS[1], string.char(248) .. ver .. ARGV[2], 'PX', ARGV[3])
return {1, t[1], t[2], ver}
`)

// getScript reads KEYS[1] together with the server's TIME, for GetTimed
// (Get itself is a plain GET). It replies {s, us} when the key is absent,
// {s, us, value} otherwise, and {s, us, 0} when the key holds another
// Redis type.
var getScript = goredis.NewScript(`
local t = redis.call('TIME')
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
	return {t[1], t[2], 0}
end
if not cur then
	return {t[1], t[2]}
end
return {t[1], t[2], cur}
`)

// deleteScript replaces the live record under KEYS[1] by a tombstone that
// keeps its version, with a time to live of ARGV[1] milliseconds. A
// tombstone reads as absent; it exists so that the next write starts
// above the deleted record's version even within the same microsecond.
//
//	KEYS[1]  the record's Redis key
//	ARGV[1]  the tombstone's time to live in milliseconds (decimal)
//
// It replies 1 when it deleted a record, 0 when there was none, and 2 when
// the key holds something that is not a sluice record, which it leaves as
// it is.
var deleteScript = goredis.NewScript(`
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
	return 2
end
if not cur then
	return 0
end
local tag = string.byte(cur, 1)
if tag == 249 and #cur == 9 then
	return 0
end
if tag ~= 248 or #cur < 9 or string.sub(cur, 2, 9) == string.rep(string.char(0), 8) then
	return 2
end
redis.call('SET', KEYS[1], string.char(249) .. string.sub(cur, 2, 9), 'PX', ARGV[1])
return 1
`)
