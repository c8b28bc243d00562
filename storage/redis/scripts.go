package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts the driver runs. Each touches exactly one key (KEYS[1]),
// so it routes to one hash slot in Redis Cluster. The record layout they
// read and write is described in doc.go; the tags below must match
// tagRecord and tagTombstone in reply.go.
//
// Each script replies with one bulk string, which the driver decodes
// without intermediate values (reply.go): a status byte, then, when the
// server's clock was asked for, TIME's seconds and microseconds, each
// followed by a space, then the payload.
//
// Lua numbers are doubles, exact below 2^53, so a 64-bit version is
// handled as two 32-bit halves (hi, lo) where it needs arithmetic.

// casScript compares the version stored under KEYS[1] with ARGV[1] and,
// when they match, stores ARGV[2] under a new version with a time to live
// of ARGV[3] milliseconds, in one step.
//
//	KEYS[1]  the record's Redis key
//	ARGV[1]  the expected version: 8 bytes big-endian, or "" for absent
//	ARGV[2]  the new value
//	ARGV[3]  the time to live in milliseconds (decimal)
//	ARGV[4]  present (any value) to have the server's clock in the reply
//
// It replies "1" clock version when it swapped (version: the 8 bytes
// stored), "0" clock record on conflict with a live record, "0" clock on
// conflict with an absent key (or a tombstone), and "2" clock when the key
// holds something that is not a sluice record, which it leaves as it is.
// clock is "" unless ARGV[4] is given.
//
// The new version is max(stored version + 1, server time in microseconds
// * 4096), where the stored version is the live record's or the
// tombstone's (0 if the key has neither): it grows on every write, and a
// record written after a Delete, an expiry or a failover to a replica
// that had not received the latest writes starts above every version the
// key had, because the server clock has moved on by then (see doc.go).
var casScript = goredis.NewScript(`
local cur = redis.pcall('GET', KEYS[1])
local t = redis.call('TIME')
local clock = ''
if ARGV[4] then
	clock = t[1] .. ' ' .. t[2] .. ' '
end
if type(cur) == 'table' then
	return '2' .. clock
end
if cur then
	local tag = string.byte(cur, 1)
	local v = string.sub(cur, 2, 9)
	if tag == 248 and #v == 8 and v ~= '\0\0\0\0\0\0\0\0' then
		if v ~= ARGV[1] then
			return '0' .. clock .. cur
		end
	elseif tag ~= 249 or #cur ~= 9 then
		return '2' .. clock
	elseif ARGV[1] ~= '' then
		return '0' .. clock
	end
elseif ARGV[1] ~= '' then
	return '0' .. clock
end
local hi, lo = 0, 0
if cur then
	local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(cur, 2, 9)
	hi = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
	lo = ((b5 * 256 + b6) * 256 + b7) * 256 + b8 + 1
	if lo == 4294967296 then
		hi = hi + 1
		lo = 0
	end
end
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local chi = math.floor(us / 1048576)
local clo = (us % 1048576) * 4096
if chi > hi or (chi == hi and clo > lo) then
	hi = chi
	lo = clo
end
local ver = string.char(
	math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256,
	math.floor(hi / 256) % 256, hi % 256,
	math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256,
	math.floor(lo / 256) % 256, lo % 256)
redis.call('SET', KEYS[1], '\248' .. ver .. ARGV[2], 'PX', ARGV[3])
return '1' .. clock .. ver
`)

// getScript reads KEYS[1] together with the server's TIME, for GetTimed
// (Get itself is a plain GET). It replies "1" clock value when the key
// holds a string, "0" clock when it is absent, and "2" clock when it
// holds another Redis type.
var getScript = goredis.NewScript(`
local t = redis.call('TIME')
local clock = t[1] .. ' ' .. t[2] .. ' '
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'table' then
	return '2' .. clock
end
if not cur then
	return '0' .. clock
end
return '1' .. clock .. cur
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
if tag ~= 248 or #cur < 9 or string.sub(cur, 2, 9) == '\0\0\0\0\0\0\0\0' then
	return 2
end
redis.call('SET', KEYS[1], '\249' .. string.sub(cur, 2, 9), 'PX', ARGV[1])
return 1
`)
