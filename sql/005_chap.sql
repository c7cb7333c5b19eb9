-- 005: per-volume CHAP credentials. The storage step gives every volume a random CHAP user and
-- secret before its target is made; the target admits an initiator only with them (on top of
-- its address/IQN ACL), and QEMU gets the secret through a libvirt secret on the gateway's host.
-- chap_secret is never stored in the clear: it holds 'fernet:<token>', the secret sealed with
-- the frontend's own key (<state_dir>/chap/key, root only; see vc.iscsi.seal), so whoever can
-- read this table (the web pages, a dump) cannot log in to a LUN with it. NULL: none yet (a
-- volume made before 005 gets its credentials at its next start). Re-runnable (IF NOT EXISTS).
ALTER TABLE vciscsi ADD COLUMN IF NOT EXISTS chap_user VARCHAR(64) NULL AFTER lun;
ALTER TABLE vciscsi ADD COLUMN IF NOT EXISTS chap_secret VARCHAR(255) NULL AFTER chap_user;
