-- 004: usable clusters. Each gateway has a second NIC on the public network (its own MAC,
-- allocated from the same counter as the private ones, held in vcalloc like them), and each
-- node's guest readiness is observed: 'booting' until its SSH port answers, then 'up'
-- ('late' when it did not within [virt] ready_timeout). Re-runnable (IF NOT EXISTS).
ALTER TABLE vcnode ADD COLUMN IF NOT EXISTS public_mac CHAR(17) NULL AFTER public_ip;
ALTER TABLE vcnode ADD COLUMN IF NOT EXISTS readiness VARCHAR(16) NOT NULL DEFAULT 'booting'
  AFTER state;
ALTER TABLE vcnode ADD COLUMN IF NOT EXISTS booted_at DATETIME NULL AFTER readiness;
ALTER TABLE vcnode ADD COLUMN IF NOT EXISTS up_at DATETIME NULL AFTER booted_at;
