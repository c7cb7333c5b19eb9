-- 009: notices to a cluster's owner and users (vc.notify): the warnings before the end
-- ([notify] before_end: mail to the owner, wall on every node) and the notices that a
-- reservation failed or was stopped early (mail). Each is one row, written before it is sent:
-- the unique key (rack, start_at, end_at, kind) makes "sent once" a fact of the database, across
-- ticks, restarts and frontends.
--   start_at: the reservation's start when the notice was due (a reopened reservation starts
--     anew: a new generation of notices);
--   end_at: the end it is about (an extension or a shortening gets fresh warnings for the new
--     end; a failed start retried gets no second 'failed' mail);
--   kind: 'before:<seconds>' (a warning), 'failed:<start|stop|delete>', 'stopped-early';
--   owner, detail: what the mail needs (no foreign key: a notice that the reservation was
--     stopped early by a delete outlives the row);
--   mail_at / wall_at: when that channel was done (NULL = not yet); attempts, last_error: mail
--     failures are retried by the next tick, at most 5 times; done = 1 once nothing is left
--     to do (sent, given up, or moot: a warning whose end has passed).
-- (Not named vcnotice: a table of that name, of another shape, was made by a migration that was
-- later withdrawn; IF NOT EXISTS would silently keep it.) Re-runnable (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS vcnotices (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  rack INT UNSIGNED NOT NULL,
  start_at DATETIME NOT NULL,
  end_at DATETIME NOT NULL,
  kind VARCHAR(32) NOT NULL,
  owner VARCHAR(64) NOT NULL,
  detail TEXT NULL,
  created_at DATETIME(6) NOT NULL,
  mail_at DATETIME(6) NULL,
  wall_at DATETIME(6) NULL,
  attempts INT UNSIGNED NOT NULL DEFAULT 0,
  last_error TEXT NULL,
  done TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (id),
  UNIQUE KEY notice_once (rack, start_at, end_at, kind),
  KEY by_done (done)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
