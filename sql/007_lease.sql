-- 007: the lease around the cluster (vc.metad).
-- vcleasetoken: one per started rack, the sha256 (hex) of the token the Seed step put in every
-- node's seed (/etc/vc/lease.token); the token itself is only in the seed and in
-- state_dir/keys/rack-N/lease.token (0600, removed with the cluster's key pair at stop).
-- Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS vcleasetoken (
  rack INT UNSIGNED NOT NULL,
  token_sha256 CHAR(64) NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (rack),
  CONSTRAINT vcleasetoken_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
