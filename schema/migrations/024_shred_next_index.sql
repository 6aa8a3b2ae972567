-- Shredding a patient must also empty the digests a blind-index rotation (019) computes for the next
-- key version, or a lookup during the rotation would still find the shredded patient. 019 created
-- those columns after 018 granted the key role its columns, so the grant comes here.
GRANT UPDATE (mrn_bidx_next, ssn_bidx_next) ON phigate.patients TO phigate_keys;
