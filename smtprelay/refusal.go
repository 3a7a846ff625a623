package smtprelay

import "github.com/emersion/go-smtp"

// refuse answers cmd with err: it tells ServerOptions.OnAccept the reason.
func (x *session) refuse(cmd, reason string, err *smtp.SMTPError) error {
	x.s.tell(false, reason)
	return err
}
