package controller

import "godwit.dev/godwit/internal/lease"

// LeadershipName is the leadership the migration controller runs under.
const LeadershipName = "controller"

// Leadership hands out the fencing epoch every controller write carries (see package lease).
type Leadership = lease.Leadership
