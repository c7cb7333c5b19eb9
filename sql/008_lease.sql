-- 008: the lease around the cluster (vc.metad, vc.notify, vc.preflight).
-- vcleasetoken: one per started rack, the sha256 (hex) of the token the Seed step put in every
-- node's seed (/etc/vc/lease.token); the token itself is only in the seed and in
-- state_dir/keys/rack-N/lease.token (0600, removed with the cluster's key pair at stop).
-- vcnotice: each warning or notice sent once (mail and wall), also across ticks and restarts:
-- kind 'before:<seconds>' for the end of a given end_at, 'failed', 'stopped-early', 'preflight'.
-- Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS vcleasetoken (
  rack INT UNSIGNED NOT NULL,
  token_sha256 CHAR(64) NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (rack),
  CONSTRAINT vcleasetoken_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS vcnotice (
  rack INT UNSIGNED NOT NULL,
  kind VARCHAR(64) NOT NULL,
  end_at DATETIME NOT NULL,
  sent_at DATETIME NOT NULL,
  channels VARCHAR(255) NOT NULL DEFAULT '',
  detail VARCHAR(1024) NOT NULL DEFAULT '',
  PRIMARY KEY (rack, kind, end_at),
  CONSTRAINT vcnotice_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
