-- 006: leases — mutual exclusion in the database, for frontends that share it (Galera).
-- One row per rack ('rack-N': who starts or stops it) and one for the tick's singleton work
-- ('tick'). A lease is taken by one conditional UPDATE (free, already ours, or expired) and
-- renewed by its holder every third of [site] lease_seconds; a dead frontend's lease expires and
-- another takes the work over (vc.dblease). Row locks and GET_LOCK() are node-local on Galera;
-- a write to the row is certified cluster-wide, so exactly one taker commits.
-- holder: [site] frontend_id, NULL when free; expires_at: UTC by the holder's clock;
-- generation: +1 at every take (a fencing token: a renewal or release names the generation it
-- holds, so a frontend whose lease was taken over cannot renew or release the new holder's);
-- beats: renewals since the take (a renewal always changes the row, so its rowcount is 1).
-- Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS vclease (
  name VARCHAR(64) NOT NULL,
  holder VARCHAR(255) NULL,
  expires_at DATETIME(6) NULL,
  taken_at DATETIME(6) NULL,
  generation BIGINT UNSIGNED NOT NULL DEFAULT 0,
  beats BIGINT UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
