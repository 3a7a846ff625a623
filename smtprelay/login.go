package smtprelay

import (
	"github.com/emersion/go-sasl"
)

// loginServer is the server side of SASL LOGIN, which go-sasl provides only
// as a client. LOGIN is obsolete (draft-murchison-sasl-login) but some
// helpdesks and appliances offer nothing else. The prompts are the
// customary "Username:" and "Password:".
type loginServer struct {
	check func(user, pass string) error
	user  string
	state int
}

func newLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.state {
	case 0:
		s.state = 1
		if response == nil {
			// No initial response: ask for the user name.
			return []byte("Username:"), false, nil
		}
		s.user = string(response)
		s.state = 2
		return []byte("Password:"), false, nil
	case 1:
		s.user = string(response)
		s.state = 2
		return []byte("Password:"), false, nil
	case 2:
		s.state = 3
		return nil, true, s.check(s.user, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}
