package storage_test

import (
	_ "github.com/alicebob/miniredis/v2"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/testcontainers/testcontainers-go"
	_ "github.com/testcontainers/testcontainers-go/modules/postgres"
	_ "github.com/testcontainers/testcontainers-go/modules/redis"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/time/rate"
)
