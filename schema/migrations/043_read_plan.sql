-- A read by id no longer reads the actor's whole care team (issue #10; bench/README.md, "A smaller
-- row-security plan for a read"). Same rules, same rows.
--
-- A read's statements run as cached generic plans. In them PostgreSQL turned patients_select's
-- care-team EXISTS into a hashed subplan: each statement first read every care_team row of the
-- actor (334 for a physician of the bench's 2,000 patients) into a hash table, then looked the
-- patient up in it. For one patient by id that was over half of its backend's instructions, and it
-- grew with the care team. OFFSET 0 keeps the planner from flattening the EXISTS into that hash:
-- it stays a probe of care_team_subject by (actor, patient), per patient row that reaches it, which
-- costs the same for any care team. A page probes once per row of its clinics instead of hashing
-- once, which measured dearer at this care team size, and cheaper than the hash once care teams
-- grow (README).
--
-- The clinics inside the break-glass test and the reviewer branch of grants_select are now asked
-- inline: they are evaluated only for a live grant row found by its index, so their InitPlans
-- (started on every execution, nearly never run) went with nothing in their place. The actor stays
-- an InitPlan where it keys a probe made per row: inline, a page paid current_setting() per probe.

ALTER POLICY patients_select ON phigate.patients USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND CASE (SELECT phigate.ctx_patient_reach())
          WHEN 'clinic' THEN true
          WHEN 'care_team' THEN EXISTS (
            SELECT 1 FROM phigate.care_team ct
            WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
            OFFSET 0
          )
          ELSE false
        END
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.clinic_id = patients.clinic_id
      AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY (phigate.ctx_clinics()))
  )
);

-- An actor's own grants, or a reviewer's within the request's clinics (012, 020).
ALTER POLICY grants_select ON phigate.break_glass_grants USING (
  actor = (SELECT phigate.ctx_actor())
  OR ((SELECT phigate.ctx_reviewer()) AND clinic_id = ANY (phigate.ctx_clinics()))
);
