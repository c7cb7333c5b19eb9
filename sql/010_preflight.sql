-- 010: the last pre-flight of each reservation (vc/preflight.py): when it ran, what ran it
-- (booking, tick, manual) and the problems found (a JSON list of {kind, where, detail}; [] = none).
-- tick_at: when the tick's own run ([cron] preflight_minutes before the start) happened, so the
-- tick runs it once. Removed with its reservation. Re-runnable.
CREATE TABLE IF NOT EXISTS vcpreflight (
  rack INT UNSIGNED NOT NULL,
  checked_at DATETIME NOT NULL,
  `trigger` VARCHAR(16) NOT NULL,
  problems TEXT NOT NULL,
  tick_at DATETIME NULL,
  PRIMARY KEY (rack),
  CONSTRAINT vcpreflight_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
