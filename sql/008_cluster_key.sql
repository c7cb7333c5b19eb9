-- 008: the cluster's own SSH key pair lives in the database, not only in one frontend's
-- state_dir: a frontend that finishes another's start (two frontends, a lease taken over) uses
-- the same pair, so a gateway booted by the first still reaches computes booted by the second.
-- The private half is sealed (Fernet) with the frontends' shared key (state_dir/chap/key), so
-- whoever reads the database (the web pages) cannot use it. Removed at stop. Re-runnable.
CREATE TABLE IF NOT EXISTS vcclusterkey (
  rack INT UNSIGNED NOT NULL,
  public_key TEXT NOT NULL,
  private_sealed TEXT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (rack),
  CONSTRAINT vcclusterkey_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
